from fmforge.cli.app import main

main()
