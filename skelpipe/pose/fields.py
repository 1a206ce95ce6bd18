"""Fields of people, for benchmarks without a trained checkpoint (``bench extract --weights people``).

An untrained OpenPifPaf network gives the decoder nonsense: random weights put a seed at nearly
every location, and ``network.bias_heads`` (a person anchored at every cell) a grid of people
in every frame. Both make decoding far slower than a trained network's on a real clip, so a
speed ratio measured with them says little. ``PeopleFields`` rewrites the heads' output into the
fields a trained network gives on a clip of a few people seen clearly: for each joint, a
confidence blob of about two cells around it (peak ``confidence``), its cells' vectors pointing at
the joint; for each bone of the skeleton, confidence along the segment with vectors to both ends.
The people walk across the frame, so that every frame differs. The network itself still runs on
the frames (its cost is the real one); only its output is replaced, after the fact.

It is a forward hook of the whole network, and pickles with it: a checkpoint saved with it
(``network.random_checkpoint(..., people=2)``) gives ``python -m openpifpaf.video`` the same
fields, so both sides of a comparison decode the same thing.
"""

import numpy as np
import torch


class PeopleFields:
    """Forward hook of an OpenPifPaf ``Shell``: the fields of ``people`` upright people (``pose``:
    the CIF head's upright COCO pose; ``skeleton``: the CAF head's 1-based joint pairs; ``heads``:
    the CIF and CAF outputs' indices) walking across each frame, ``height`` of the field tall."""

    def __init__(self, pose, skeleton, heads=(0, 1), people: int = 2, height: float = 0.6, sigma: float = 2.0,
                 confidence: float = 0.9):
        pose = np.asarray(pose, np.float32)[:, :2] * np.float32([1, -1])  # y down, as in images
        self.pose = (pose - pose.mean(axis=0)) / (pose[:, 1].max() - pose[:, 1].min())
        self.pairs = np.asarray(skeleton, np.int64) - 1
        self.heads = tuple(heads)  # the (CIF, CAF) indices among the network's outputs
        self.people, self.height, self.sigma, self.confidence = people, height, sigma, confidence
        self.frame = 0

    def joints(self, frame: int, h: int, w: int) -> np.ndarray:
        """(people, joints, 2) positions in field cells of every person in ``frame``."""
        out = []
        for p in range(self.people):
            lane = (p + 1) / (self.people + 1)
            cx = w * (lane + 0.15 * np.sin(0.05 * frame + 2.0 * p))
            cy = h * (0.5 + 0.05 * np.sin(0.11 * frame + p))
            out.append(self.pose * (self.height * h) + np.float32([cx, cy]))
        return np.stack(out).astype(np.float32)

    def __call__(self, module, inputs, outputs):
        cif, caf = outputs[self.heads[0]], outputs[self.heads[1]]
        for b in range(cif.shape[0]):
            joints = torch.from_numpy(self.joints(self.frame, cif.shape[-2], cif.shape[-1])).to(cif.device)
            self._render(cif[b], caf[b], joints)
            self.frame += 1
        return outputs

    def _blob(self, d2: torch.Tensor):
        """Confidence from squared distances (people, fields, h, w): the best person and its index."""
        conf = self.confidence * torch.exp(-d2 / (2 * self.sigma ** 2))
        best, who = conf.max(dim=0)
        return torch.where(best > 0.01, best, torch.zeros_like(best)), who

    def _render(self, cif: torch.Tensor, caf: torch.Tensor, joints: torch.Tensor):
        """Write the fields of ``joints`` (people, J, 2) into one image's CIF (J, 5, h, w) and CAF
        (bones, 8, h, w) outputs: confidence at component 1, vectors at 2:4 (and 4:6)."""
        h, w = cif.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h, device=cif.device, dtype=torch.float32),
                                torch.arange(w, device=cif.device, dtype=torch.float32), indexing="ij")
        cells = torch.stack([xs, ys], dim=-1)                                       # (h, w, 2)
        d2 = ((cells[None, None] - joints[:, :, None, None]) ** 2).sum(-1)          # (P, J, h, w)
        conf, who = self._blob(d2)
        cif[:, 1] = conf.to(cif.dtype)
        target = joints[who, torch.arange(joints.shape[1], device=cif.device)[:, None, None]]  # (J, h, w, 2)
        cif[:, 2:4] = target.permute(0, 3, 1, 2).to(cif.dtype)
        a, b = joints[:, self.pairs[:, 0]], joints[:, self.pairs[:, 1]]             # (P, bones, 2)
        ab = b - a
        t = (((cells[None, None] - a[:, :, None, None]) * ab[:, :, None, None]).sum(-1)
             / (ab ** 2).sum(-1).clamp_min(1e-6)[:, :, None, None]).clamp(0, 1)
        nearest = a[:, :, None, None] + t[..., None] * ab[:, :, None, None]
        conf, who = self._blob(((cells[None, None] - nearest) ** 2).sum(-1))
        caf[:, 1] = conf.to(caf.dtype)
        bones = torch.arange(len(self.pairs), device=caf.device)[:, None, None]
        caf[:, 2:4] = a[who, bones].permute(0, 3, 1, 2).to(caf.dtype)
        caf[:, 4:6] = b[who, bones].permute(0, 3, 1, 2).to(caf.dtype)
