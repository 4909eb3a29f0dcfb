"""Dynamic Importance Weighting (DIW, paper Eq. 5-9).

Intrinsic importance of a triplet (p0, p1, n1) from DCT pHashes of patches around the points
(the paper's P1, P2, P_n2 are our patches at p0 in image 0, p1 and n1 in image 1):

    v_pos = Hamming(pHash(P(p0)), pHash(P(p1)))
    v_neg = Hamming(pHash(P(p0)), pHash(P(n1)))
    s     = v_neg / max(v_pos, v_pos_min)

Guard: v_pos = 0 (identical hashes: the positive pair looks exactly alike) is clamped to
``v_pos_min = 1`` bit, so s = v_neg, the largest value a triplet with that negative can get —
such a triplet is intrinsically easy, which is what a large s means. s = 0 (the negative patch
hashes like the anchor: intrinsically indistinguishable) zeroes the triplet's loss, as intended
by the paper. s is in [0, 64] and has no gradient.

Empirical importance: a moving histogram of x = s * M over all valid triplets (M = 0 included,
so that CDF(x) is the fraction of recent triplets at most as hard as x),
``pdf = (1 - momentum) * pdf + momentum * pdf_batch`` with momentum 0.1 (the first batch sets
it), and ``w = CDF(x)`` read at x's bin; w = 0 where M = 0; no gradient through w. The batch
is added before the weights are read (DSM does the same), so the hardest triplet of the batch
gets w = 1 when the histogram was empty. ``L_desc = mean(w * s * M)`` over valid triplets.

Bins: linear on [0, x_max] with ``x_max = 64 * (margin + 2)`` by default, the largest possible
s * M (s <= 64, M <= m + 2 for unit descriptors), so no value is ever clipped; 8192 bins give a
resolution of ~0.023 for m = 1, fine against the bulk of x (~0 to 5). Values above a
user-chosen smaller x_max fall into the last bin.
"""

import torch
from torch import nn

from ..options import with_defaults
from .phash import extract_patches, hamming, phash


def intrinsic_importance(
    image0: torch.Tensor,
    image1: torch.Tensor,
    p0: torch.Tensor,
    p1: torch.Tensor,
    n1: torch.Tensor,
    patch_size: int = 32,
    patch_extent: float = None,
    v_pos_min: float = 1.0,
) -> dict:
    """pHash-based intrinsic importance s = v_neg / max(v_pos, v_pos_min).

    Args:
        image0, image1: B x C x H x W images (C = 1 or 3).
        p0: B x N x 2 anchors in image 0; p1: B x N x 2 positives in image 1;
        n1: B x N x 2 hardest negatives in image 1 (pixels).
        patch_size: hash patch resolution (32 = the pHash input size).
        patch_extent: patch side in pixels (default patch_size).
        v_pos_min: lower clamp of v_pos (guard against division by zero).
    Returns:
        dict with s (B x N float), v_pos, v_neg (B x N int64).
    """
    if patch_size != 32:
        raise ValueError(
            "pHash hashes 32 x 32 patches; set patch_extent to cover a different pixel area."
        )
    with torch.no_grad():
        h0 = phash(extract_patches(image0, p0, patch_size, patch_extent))  # B x N x 64
        p = extract_patches(image1, torch.cat([p1, n1], 1), patch_size, patch_extent)
        h1, hn = phash(p).chunk(2, dim=1)
        v_pos = hamming(h0, h1)
        v_neg = hamming(h0, hn)
        s = v_neg.float() / v_pos.float().clamp(min=v_pos_min)
    return {"s": s, "v_pos": v_pos, "v_neg": v_neg}


class MovingHistogram(nn.Module):
    """Exponentially decaying histogram of a scalar over batches, read as a CDF.

    Buffers (saved in checkpoints, moved by ``.to``): ``pdf`` (bins,) summing to 1 once
    initialised, and ``initialized`` (bool scalar).

    Several processes (DistributedDataParallel): set ``sync_group`` to a ``torch.distributed``
    process group (e.g. ``torch.distributed.group.WORLD``); ``update`` then sums the batch's bin
    counts over the group before normalising, so every process adds the same pdf, that of the
    union of all processes' values (what one process with the whole batch would add), and all
    hold identical histograms. Every process of the group must then call ``update`` for every
    batch, also with no values (a collective call).
    """

    def __init__(
        self, bins: int = 8192, vmin: float = 0.0, vmax: float = 192.0, momentum: float = 0.1
    ):
        super().__init__()
        if bins < 1 or not vmax > vmin or not 0 < momentum <= 1:
            raise ValueError(
                f"Need bins >= 1, vmax > vmin and 0 < momentum <= 1, got {bins}, [{vmin}, {vmax}], "
                f"{momentum}."
            )
        self.bins, self.vmin, self.vmax, self.momentum = bins, vmin, vmax, momentum
        self.register_buffer("pdf", torch.zeros(bins))
        self.register_buffer("initialized", torch.tensor(False))
        self.sync_group = None  # a torch.distributed process group to sum counts over

    def bin_index(self, values: torch.Tensor) -> torch.Tensor:
        """Bin of each value; bin k covers [vmin + k d, vmin + (k + 1) d), clipped to the ends."""
        x = (values.detach().float() - self.vmin) / (self.vmax - self.vmin) * self.bins
        return x.floor().clamp(0, self.bins - 1).long()

    def batch_pdf(self, values: torch.Tensor) -> torch.Tensor:
        """Normalised histogram (bins,) of a 1D set of values."""
        return self._normalise(self._counts(values))

    def _counts(self, values: torch.Tensor) -> torch.Tensor:
        return torch.bincount(self.bin_index(values.reshape(-1)), minlength=self.bins).to(
            self.pdf.dtype
        )

    @staticmethod
    def _normalise(counts: torch.Tensor) -> torch.Tensor:
        return counts / counts.sum().clamp(min=1)

    @torch.no_grad()
    def update(self, values: torch.Tensor):
        """Add a batch of values (any shape); an empty batch changes nothing.

        With ``sync_group`` set, the batch is the union of all processes' values (a collective
        call: every process of the group must make it).
        """
        values = values.reshape(-1)
        if self.sync_group is not None:
            import torch.distributed as dist

            counts = self._counts(values)  # integers, exact in float32 up to 2**24 per bin
            dist.all_reduce(counts, group=self.sync_group)
            if not bool(counts.sum() > 0):
                return
            new = self._normalise(counts)
        elif values.numel() == 0:
            return
        else:
            new = self.batch_pdf(values)
        if bool(self.initialized):
            self.pdf.mul_(1 - self.momentum).add_(self.momentum * new)
        else:
            self.pdf.copy_(new)
            self.initialized.fill_(True)

    @torch.no_grad()
    def cdf(self, values: torch.Tensor, pdf: torch.Tensor = None) -> torch.Tensor:
        """CDF at each value: the mass of all bins up to and including the value's bin."""
        pdf = self.pdf if pdf is None else pdf
        return pdf.cumsum(0)[self.bin_index(values)].to(values.dtype)


class DynamicImportanceWeighting(nn.Module):
    """Importance-weighted triplet loss ``mean(w * s * M)`` (Eq. 8-9).

    ``forward(M, valid, image0, image1, kpts0, kpts1, neg1, update=None)``:
        M: B x N triplet losses (with gradient); valid: B x N bool.
        image0, image1: B x C x H x W; kpts0, kpts1, neg1: B x N x 2 pixels (p0, p1, n1).
        update: add this batch to the histogram; default = ``self.training``. Never updates
            in eval mode. If the histogram was never filled, the batch's own pdf is used.
    Returns a dict:
        loss: B, per-sample mean of w * s * M over the valid triplets (0 without any).
        w, s: B x N weights (0 where invalid); v_pos, v_neg: B x N Hamming distances.
    """

    default_conf = {
        "margin": 1.0,
        "patch_size": 32,
        "patch_extent": None,  # pixels covered by a patch; None = patch_size
        "v_pos_min": 1.0,
        "hist_bins": 8192,
        "hist_max": None,  # None: 64 * (margin + 2), the largest possible s * M
        "hist_momentum": 0.1,
    }

    def __init__(self, conf: dict = None):
        super().__init__()
        self.conf = c = with_defaults(self.default_conf, conf, "DynamicImportanceWeighting")
        vmax = c["hist_max"] if c["hist_max"] is not None else 64.0 * (c["margin"] + 2.0)
        self.histogram = MovingHistogram(c["hist_bins"], 0.0, vmax, c["hist_momentum"])

    def weights(self, x: torch.Tensor, valid: torch.Tensor, update: bool = None) -> torch.Tensor:
        """w = CDF(x) from the moving histogram (updated first with x[valid] if allowed)."""
        update = self.training if update is None else (update and self.training)
        values = x.detach()[valid]
        pdf = None
        if update:
            self.histogram.update(values)
        elif not bool(self.histogram.initialized):
            pdf = self.histogram.batch_pdf(values)
        w = self.histogram.cdf(x.detach(), pdf)
        return torch.where(valid & (x.detach() > 0), w, torch.zeros_like(w))

    def forward(self, M, valid, image0, image1, kpts0, kpts1, neg1, update=None) -> dict:
        c = self.conf
        if M.shape != valid.shape or M.dim() != 2:
            raise ValueError(
                f"M and valid must both be B x N, got {tuple(M.shape)}, {tuple(valid.shape)}."
            )
        imp = intrinsic_importance(
            image0, image1, kpts0, kpts1, neg1, c["patch_size"], c["patch_extent"], c["v_pos_min"]
        )
        s = torch.where(valid, imp["s"].to(M.dtype), torch.zeros_like(M))
        # w = 0 where M = 0 (x = s * M = 0 there), and also where s = 0: such a triplet has no
        # loss anyway.
        w = self.weights(s * M.detach(), valid, update)
        n = valid.sum(-1).clamp(min=1).to(M.dtype)
        loss = (w * s * M).masked_fill(~valid, 0).sum(-1) / n
        return {"loss": loss, "w": w, "s": s, "v_pos": imp["v_pos"], "v_neg": imp["v_neg"]}
