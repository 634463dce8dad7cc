"""Model states for weight tests: random but non-trivial tensors under torchvision's own keys."""

from __future__ import annotations

import torch


def randomize_(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Give norm layers and biases random values (kernels are random already), so that an equality check cannot
    pass by accident and the network still computes finite, non-trivial outputs."""
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if value.is_floating_point() and value.ndim <= 1:
            if key.endswith(("running_var", "weight")):
                value.copy_(torch.rand(value.shape, generator=g) + 0.5)
            else:
                value.copy_(torch.rand(value.shape, generator=g) * 0.2 - 0.1)
        elif key.endswith("num_batches_tracked"):
            value.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
    return state


def torchvision_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of an untrained torchvision model, with torchvision's keys, randomized."""
    import torchvision

    return randomize_(torchvision.models.get_model(arch, weights=None).state_dict(), seed)
