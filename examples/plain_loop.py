"""A plain PyTorch training loop recorded with fmforge (run it inside an fmforge repository).

fmforge init && python examples/plain_loop.py && fmforge runs show plain-loop
"""

from __future__ import annotations

import torch

from fmforge.tracking import start_run

config = {"lr": 0.05, "steps": 200, "batch": 64, "seed": 0}
torch.manual_seed(config["seed"])
weights = torch.randn(8, 1)
inputs = torch.randn(4096, 8)
targets = inputs @ weights + 0.1 * torch.randn(4096, 1)
model = torch.nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])

with start_run("examples", name="plain-loop", config=config) as run:
    for step in range(config["steps"]):
        batch = torch.randint(0, len(inputs), (config["batch"],))
        loss = torch.nn.functional.mse_loss(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        run.log(
            {"loss": loss.item(), "grad_norm": grad_norm.item()}, step=step, samples=config["batch"]
        )
    run.log_eval({"mse": torch.nn.functional.mse_loss(model(inputs), targets).item()})
