"""The 2-D domain of :func:`agcl.pipeline.run_pipeline`: RGB images as one-slice volumes, a
DeepLabV3+ stage 1, IoU per class.

Images are read on access (an image set such as :class:`agcl.data.VOCSegmentation`); the
per-image attention (small: one box and mask per present class) is kept in memory. Stage 1's
arg-max maps of the held-out images are written as ``coarse/<id>.png``, the predictions as
``predictions/<id>.png`` (VOC palette); IoU is accumulated over all held-out images (one
confusion matrix), void (255) ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from agcl.pipeline.domains.ct import labelled_indices
from agcl.pipeline.run.manifest import file_record
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint

__all__ = ["ImageDomain", "gt_attention"]


class _Part(Sequence):
    """The images (``part=0``) or masks (``part=1``) of an image set, read on access."""

    def __init__(self, data: Sequence[Any], part: int) -> None:
        self.data, self.part = data, part

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {i}")
        return self.data[i][self.part]


def gt_attention(mask: np.ndarray, class_ids: Sequence[int], margin_px: float) -> dict[int, Any]:
    """Attention from the ground truth (``coarse.source="gt"``): each present class, dilated."""
    from agcl.pipeline.coarse.image2d import attention_2d
    from agcl.pipeline.config import Coarse2DConfig

    prob = np.zeros((len(class_ids) + 1, *mask.shape), np.float32)
    for i, c in enumerate(class_ids, start=1):
        prob[i] = mask == c
    prob[0] = 1 - prob[1:].max(0)
    return attention_2d(
        prob, class_ids, Coarse2DConfig(margin_px=margin_px, attention_threshold=0.5)
    )


class ImageDomain:
    """Images, stage 1 and evaluation of a 2-D run (see the module notes)."""

    stage1 = "coarse2d"

    def __init__(
        self,
        train: Sequence[Any],
        test: Sequence[Any],
        config: Any,
        *,
        class_names: Sequence[str] | None = None,
    ) -> None:
        from agcl.data import VOC_CLASSES

        if len(train) < 2 or len(test) < 1:
            raise ValueError(
                f"train must hold at least 2 images and test 1; got {len(train)} and {len(test)}"
            )
        self.config, self.train, self.test = config, train, test
        self.class_names = list(VOC_CLASSES if class_names is None else class_names)
        if len(self.class_names) < 2:
            raise ValueError(
                "class_names must hold the background and at least one class; "
                f"got {self.class_names}"
            )
        self.organ_ids = list(range(1, len(self.class_names)))
        if config.organs is not None:
            raise ValueError(
                "config.organs selects CT organs; a 2-D run segments every class of class_names"
            )
        self.num_modalities = 1
        self.train_att: list[Any] = []
        self.test_att: list[Any] = []
        self.coarse_preds: list[np.ndarray] = []
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._ckpt: Any = None

    @staticmethod
    def _ids(data: Any) -> list[str]:
        ids = getattr(data, "ids", None)
        return [str(i) for i in ids] if ids is not None else [f"{i:06d}" for i in range(len(data))]

    def records(self, which: str) -> list[dict[str, Any]]:
        """What the run read of ``"train"`` or ``"test"``: ids with file (or pixel) digests."""
        if which not in self._records:
            data = self.train if which == "train" else self.test
            paths = getattr(data, "image_paths", None), getattr(data, "mask_paths", None)
            out = []
            for i, name in enumerate(self._ids(data)):
                if paths[0] is not None and paths[1] is not None:
                    image, label = file_record(paths[0][i]), file_record(paths[1][i])
                else:
                    im, m = data[i]
                    image = {
                        "sha256": hashlib.sha256(np.ascontiguousarray(im).tobytes()).hexdigest()
                    }
                    label = {
                        "sha256": hashlib.sha256(np.ascontiguousarray(m).tobytes()).hexdigest()
                    }
                out.append({"case_id": name, "modality": "rgb", "image": image, "label": label})
            self._records[which] = out
        return self._records[which]

    def check(self) -> None:
        """Refuse a patch larger than the images."""
        image, _ = self.train[0]
        patch = self.config.pretrain.patch_size
        if patch > max(np.asarray(image).shape[:2]):
            raise ValueError(
                f"pretrain.patch_size={patch} is larger than the images (e.g. "
                f"{np.asarray(image).shape[:2]}); choose at most {max(np.asarray(image).shape[:2])}"
            )

    def run_stage1(self, ctx: Any) -> None:
        """Train the DeepLabV3+ and compute every image's attention (and the held-out arg-max
        maps)."""
        from agcl.data import save_voc_mask
        from agcl.pipeline.coarse.image2d import (
            attention_2d,
            load_coarse_2d,
            predict_probabilities_2d,
            train_coarse_2d,
        )

        c = self.config.coarse2d
        parts = ctx.components.get("coarse2d", {})
        fp = stage_fingerprint(
            "coarse2d",
            self.config,
            num_classes=len(self.class_names),
            n_images=len(self.train),
            components=components_record(**parts),
        )
        ctx.book.begin("coarse2d", fp, {"cases": self.records("train")})
        dd.barrier()
        if dd.is_main():
            train_coarse_2d(
                _Part(self.train, 0),
                _Part(self.train, 1),
                self.config,
                len(self.class_names),
                ctx.out,
                resume=True,
                device=ctx.device,
                log=ctx.log,
                callback=ctx.callback,
                **parts,
            )
        dd.barrier()
        ckpt = self._ckpt = ctx.out / "checkpoints" / "coarse2d.pt"
        ctx.book.done("coarse2d", [ckpt])
        model, _, _ = load_coarse_2d(ckpt, ctx.device)

        def attend(data: Sequence[Any], with_preds: bool) -> tuple[list[Any], list[np.ndarray]]:
            atts, preds = [], []
            for i in range(len(data)):
                p = predict_probabilities_2d(model, data[i][0], device=ctx.device)
                atts.append(attention_2d(p, self.organ_ids, c))
                if with_preds:
                    preds.append(p.argmax(0).numpy().astype(np.uint8))
            return atts, preds

        if self.config.coarse.source == "gt":
            self.train_att = [
                gt_attention(m, self.organ_ids, c.margin_px) for m in _Part(self.train, 1)
            ]
        else:
            self.train_att, _ = attend(self.train, False)
        self.test_att, self.coarse_preds = attend(self.test, True)
        if dd.is_main():
            for name, pred in zip(self._ids(self.test), self.coarse_preds):
                path = ctx.out / "coarse" / f"{name}.png"
                save_voc_mask(path, pred)
                ctx.folder.own(path)
            ctx.folder.save()

    def attention_inputs(self) -> dict[str, Any]:
        if self.config.coarse.source == "gt":
            return {"attention": "ground truth"}
        return {"attention": {"coarse2d": file_record(self._ckpt)["sha256"]}}

    def training_volumes(self, cache: Any) -> Any:
        from agcl.data.images2d import ImageVolumes

        return ImageVolumes(_Part(self.train, 0), self.train_att, _Part(self.train, 1))

    def probe_volumes(self, cache: Any) -> tuple[Any, Any, list[str]]:
        """``(fit, score, names)`` for the encoder probe (see :class:`CTDomain`)."""
        from agcl.data.images2d import ImageVolumes

        return (
            self.training_volumes(cache),
            ImageVolumes(_Part(self.test, 0), self.test_att),
            self._ids(self.test),
        )

    def labelled(self) -> list[int]:
        return labelled_indices(
            [0] * len(self.train), self.config.segment.label_fraction, self.config.seed
        )

    def evaluate(
        self, ctx: Any, seg_ckpt: Any, *, write_predictions: bool = True
    ) -> dict[str, Any]:
        """Held-out images: predictions, IoU per class; stage 1's IoU and attention recall."""
        from agcl.data import save_voc_mask
        from agcl.metrics import confusion_matrix, iou_from_confusion, mean_iou
        from agcl.pipeline.segment import load_segment_model, segment_image_2d
        from agcl.sampling import attention_recall

        model, _, _ = load_segment_model(seg_ckpt, ctx.device)
        k = len(self.class_names)
        cm = np.zeros((k, k), np.int64)
        cm_coarse = np.zeros((k, k), np.int64)
        recall: dict[int, list[float]] = {c: [] for c in self.organ_ids}
        preds: list[np.ndarray] = []
        for i, name in enumerate(self._ids(self.test)):
            image, mask = self.test[i]
            pred, _ = segment_image_2d(
                model,
                image,
                self.test_att[i],
                self.organ_ids,
                threshold=self.config.segment.threshold,
                device=ctx.device,
            )
            cm += confusion_matrix(pred, mask, k)
            cm_coarse += confusion_matrix(self.coarse_preds[i], mask, k)
            att = {c: (b[:2], m[..., 0]) for c, (b, m) in self.test_att[i].items()}
            for c, r in attention_recall(att, mask, self.organ_ids).items():
                if r is not None:
                    recall[c].append(r)
            if write_predictions:
                path = ctx.out / "predictions" / f"{name}.png"
                save_voc_mask(path, pred)
                ctx.folder.own(path)
            if len(preds) < 4:
                preds.append(pred)
        ctx.folder.save()
        ious, coarse_ious = iou_from_confusion(cm), iou_from_confusion(cm_coarse)
        return {
            "mean": {"miou": mean_iou(ious)},
            "per_class": {n: {"iou": v} for n, v in zip(self.class_names, ious)},
            "coarse": {
                "miou": mean_iou(coarse_ious),
                "per_class": dict(zip(self.class_names, coarse_ious)),
                "recall": {
                    self.class_names[c]: (float(np.mean(v)) if v else None)
                    for c, v in recall.items()
                },
            },
            "examples": {"ids": self._ids(self.test)[: len(preds)], "preds": preds},
            "attention": self.test_att,
        }
