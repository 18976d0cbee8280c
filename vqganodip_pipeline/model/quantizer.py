"""Vector quantizer (VQ-VAE / taming) with codebook-health tools.

The encoder output z_e (N, D, h, w) is replaced, position by position, by its nearest code in
the codebook Z (K x D, squared Euclidean distance); the straight-through estimator copies the
decoder's gradient from z_q to z_e. Loss (beta on the commitment term, as in the VQ-VAE paper):

    L_VQ = ||sg[z_e] - z_q||^2 + beta * ||sg[z_q] - z_e||^2      (means over all elements)

With ``update="ema"`` the codebook follows an exponential moving average of the encoder outputs
assigned to each code (van den Oord et al. 2017, appendix) and the first term is dropped.

Collapse remedies used by the trainer: :func:`kmeans_init` (codebook from k-means on encoder
outputs) and :func:`restart_dead_codes` (unused codes reset to random encoder outputs).
Distances are computed in fp32 (autocast off: bf16 would mis-assign near ties) and in row chunks
so that the (rows x K) distance matrix stays below ``max_distance_elements``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerInfo:
    """Side outputs of one quantization.

    indices: (N, h, w) code index per latent position; perplexity: exp(entropy) of the batch's
    code histogram (1 = a single code, K = uniform use); codes_used: distinct codes in the batch;
    usage: codes_used / K; per_sample_loss: (N,) the VQ loss of each image (same formula as the
    batch loss, detached); z_e: the (detached, fp32) encoder output that was quantized.
    """

    indices: torch.Tensor
    perplexity: torch.Tensor
    codes_used: int
    usage: float
    per_sample_loss: torch.Tensor
    z_e: torch.Tensor


class VectorQuantizer(nn.Module):
    """Codebook of K = ``n_embed`` vectors of dimension D = ``embed_dim``."""

    def __init__(
        self,
        n_embed: int,
        embed_dim: int,
        beta: float = 0.25,
        update: str = "loss",
        ema_decay: float = 0.99,
        ema_eps: float = 1e-5,
        max_distance_elements: int = 1 << 24,
    ):
        super().__init__()
        if n_embed < 2:
            raise ValueError(f"n_embed (K) must be >= 2, got {n_embed}")
        if update not in ("loss", "ema"):
            raise ValueError(f"update must be 'loss' or 'ema', got {update!r}")
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        self.update = update
        self.ema_decay = ema_decay
        self.ema_eps = ema_eps
        self.max_distance_elements = max_distance_elements
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        if update == "ema":
            self.embedding.weight.requires_grad_(False)
            self.register_buffer("ema_cluster_size", torch.ones(n_embed))
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    @torch.no_grad()
    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared L2) for each row of ``z_flat`` (M, D)."""
        codebook = self.codebook.float()
        z_flat = z_flat.float()
        code_sq = codebook.pow(2).sum(1)
        rows = max(1, self.max_distance_elements // self.n_embed)
        out = torch.empty(z_flat.shape[0], dtype=torch.long, device=z_flat.device)
        for start in range(0, z_flat.shape[0], rows):
            chunk = z_flat[start : start + rows]
            # ||z||^2 is constant per row and does not change the argmin.
            dist = torch.addmm(code_sq, chunk, codebook.t(), beta=1.0, alpha=-2.0)
            out[start : start + rows] = dist.argmin(dim=1)
        return out

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices`` (N, h, w) as a (N, D, h, w) tensor."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, QuantizerInfo]:
        """z (N, D, h, w) -> (z_q with straight-through gradient, L_VQ, info)."""
        if z.ndim != 4 or z.shape[1] != self.embed_dim:
            raise ValueError(f"expected (N, {self.embed_dim}, h, w) latents, got {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            n, d, h, w = z.shape
            z_flat = z.permute(0, 2, 3, 1).reshape(-1, d)
            indices = self.nearest(z_flat)
            z_q = self.lookup(indices.view(n, h, w))
            if self.update == "ema" and self.training:
                # After the lookup: this pass uses the codes its assignments were made with.
                self._ema_update(z_flat.detach(), indices)
            commitment = (z_q.detach() - z).pow(2)
            if self.update == "loss":
                loss_map = (z_q - z.detach()).pow(2) + self.beta * commitment
            else:
                loss_map = self.beta * commitment
            loss = loss_map.mean()
            per_sample = loss_map.detach().mean(dim=(1, 2, 3))
            z_q = z + (z_q - z).detach()
            counts = torch.bincount(indices, minlength=self.n_embed).float()
            probs = counts / counts.sum()
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
            used = int((counts > 0).sum())
        info = QuantizerInfo(
            indices=indices.view(n, h, w),
            perplexity=perplexity,
            codes_used=used,
            usage=used / self.n_embed,
            per_sample_loss=per_sample,
            z_e=z.detach(),
        )
        return z_q, loss, info

    @torch.no_grad()
    def _ema_update(self, z_flat: torch.Tensor, indices: torch.Tensor) -> None:
        counts = torch.bincount(indices, minlength=self.n_embed).to(z_flat.dtype)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, z_flat)
        decay = self.ema_decay
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1.0 - decay)
        self.ema_embed_sum.mul_(decay).add_(sums, alpha=1.0 - decay)
        total = self.ema_cluster_size.sum()
        # Laplace smoothing keeps codes with no recent assignment from dividing by zero.
        size = (
            (self.ema_cluster_size + self.ema_eps) / (total + self.n_embed * self.ema_eps) * total
        )
        self.embedding.weight.copy_(self.ema_embed_sum / size.unsqueeze(1))

    @torch.no_grad()
    def set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        """Overwrite the codes at ``which`` (index or bool mask) with ``vectors`` (n, D)."""
        weight = self.embedding.weight
        weight[which] = vectors.to(weight.dtype)
        if self.update == "ema":
            self.ema_cluster_size[which] = 1.0
            self.ema_embed_sum[which] = vectors.to(weight.dtype)


def _sample_rows(z_flat: torch.Tensor, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` rows of ``z_flat``: distinct when there are enough, else with replacement plus a
    little noise (so that duplicated codes can separate)."""
    m = z_flat.shape[0]
    if m >= n:
        pick = torch.randperm(m, generator=generator, device="cpu")[:n].to(z_flat.device)
        return z_flat[pick]
    pick = torch.randint(0, m, (n,), generator=generator, device="cpu").to(z_flat.device)
    noise = torch.randn(n, z_flat.shape[1], generator=generator, device="cpu").to(z_flat.device)
    scale = z_flat.std().clamp_min(1e-6) * 0.01
    return z_flat[pick] + noise * scale


@torch.no_grad()
def restart_dead_codes(
    quantizer: VectorQuantizer,
    z_e: torch.Tensor,
    dead: torch.Tensor,
    generator: torch.Generator | None = None,
) -> int:
    """Reset the codes flagged in ``dead`` (bool, K) to random encoder outputs.

    ``z_e``: recent encoder outputs, (N, D, h, w) or (M, D). A dead code never wins the argmin
    and so never receives a gradient (or EMA update); placing it on an actual encoder output
    makes it win at least that position. Returns the number of codes reset.
    """
    z_flat = z_e.detach().float()
    if z_flat.ndim == 4:
        z_flat = z_flat.permute(0, 2, 3, 1).reshape(-1, z_flat.shape[1])
    dead = dead.to(torch.bool)
    if dead.shape != (quantizer.n_embed,):
        raise ValueError(f"dead must be a ({quantizer.n_embed},) mask, got {tuple(dead.shape)}")
    n_dead = int(dead.sum())
    if n_dead == 0 or z_flat.shape[0] == 0:
        return 0
    where = dead.to(quantizer.codebook.device)
    quantizer.set_codes(where, _sample_rows(z_flat, n_dead, generator))
    return n_dead


@torch.no_grad()
def kmeans_init(
    quantizer: VectorQuantizer,
    z_e: torch.Tensor,
    iters: int = 10,
    generator: torch.Generator | None = None,
) -> float:
    """Set the codebook to k-means (Lloyd, ``iters`` rounds) centroids of encoder outputs.

    Starts from K random rows of ``z_e`` ((N, D, h, w) or (M, D)); a cluster that empties keeps
    its previous centroid. Returns the final mean squared quantization error.
    """
    z_flat = z_e.detach().float()
    if z_flat.ndim == 4:
        z_flat = z_flat.permute(0, 2, 3, 1).reshape(-1, z_flat.shape[1])
    k = quantizer.n_embed
    centroids = _sample_rows(z_flat, k, generator)
    quantizer.set_codes(torch.arange(k, device=centroids.device), centroids)
    for _ in range(iters):
        assign = quantizer.nearest(z_flat)
        counts = torch.bincount(assign, minlength=k).to(z_flat.dtype)
        sums = torch.zeros(k, z_flat.shape[1], dtype=z_flat.dtype, device=z_flat.device)
        sums.index_add_(0, assign, z_flat)
        filled = counts > 0
        centroids = centroids.clone()
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        quantizer.set_codes(torch.arange(k, device=centroids.device), centroids)
    assign = quantizer.nearest(z_flat)
    return float(F.mse_loss(quantizer.codebook.float()[assign], z_flat))
