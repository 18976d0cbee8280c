"""Loss terms of VQGAN training: pixel loss, GAN losses and the adaptive GAN weight.

All functions take float tensors and return scalar tensors (means over all elements)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_loss(x: torch.Tensor, x_hat: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean |x - x_hat| ("l1", taming) or mean (x - x_hat)^2 ("mse", the paper)."""
    if kind == "l1":
        return (x - x_hat).abs().mean()
    if kind == "mse":
        return (x - x_hat).pow(2).mean()
    raise ValueError(f"pixel loss kind must be 'l1' or 'mse', got {kind!r}")


def generator_loss(logits_fake: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    """GAN loss of the generator on D's logits for x_hat.

    hinge: -mean(D(x_hat)) (taming); vanilla: mean(softplus(-D(x_hat))) = -mean(log sigmoid(D)),
    the non-saturating log D form of the paper.
    """
    if kind == "hinge":
        return -logits_fake.mean()
    if kind == "vanilla":
        return F.softplus(-logits_fake).mean()
    raise ValueError(f"GAN loss kind must be 'hinge' or 'vanilla', got {kind!r}")


def discriminator_loss(
    logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str = "hinge"
) -> torch.Tensor:
    """D's loss: hinge 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]) or vanilla
    0.5 (E[softplus(-D(x))] + E[softplus(D(x_hat))]) (binary cross-entropy on logits)."""
    if kind == "hinge":
        return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
    if kind == "vanilla":
        return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())
    raise ValueError(f"GAN loss kind must be 'hinge' or 'vanilla', got {kind!r}")


def adaptive_weight(
    rec_loss: torch.Tensor,
    gan_loss: torch.Tensor,
    last_layer: torch.Tensor,
    disc_weight: float = 1.0,
    delta: float = 1e-6,
    max_weight: float = 1e4,
) -> torch.Tensor:
    """lambda = disc_weight * clamp(||grad_GL L_rec|| / (||grad_GL L_GAN|| + delta), 0, max_weight).

    GL is ``last_layer`` (the decoder's output conv weight). Balances the two gradients at the
    decoder output so the GAN term neither vanishes nor swamps the reconstruction. Detached.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    ratio = rec_grad.float().norm() / (gan_grad.float().norm() + delta)
    return torch.clamp(ratio, 0.0, max_weight).detach() * disc_weight
