"""One module per merge method; ``merging.registry`` lists them."""
