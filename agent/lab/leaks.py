"""The decoded-pixel leak rule, and the person-leak and over-masking figures built on it.

One rule decides whether a private pixel left the hub, for zones and people alike: a pixel of the
decoded output is the source pixel when its luma is not black (>= OUTPUT_MIN_LUMA) and every
channel is within LEAK_TOL of the source; a source pixel darker than SOURCE_MIN_LUMA cannot be
told from a black mask and is indeterminate. The rule looks only at pixels (the fixture's frame,
the decoded output and the ground truth), never at what the project's detectors said, so it
checks the detectors instead of trusting them.

Measured on the fixtures with x264 CRF 23 (the replay's encoder settings): inside correctly
masked areas the decoded luma stays <= 17 (ringing next to bright edges; single channels reach
42), while leaked source pixels come back within a few levels of the source (rarely more than 30
in one channel, at 1-px edge leaks that 4:2:0 smears). So OUTPUT_MIN_LUMA is about 2x the ringing
seen, and LEAK_TOL above what the codec does to a visible pixel.

Person leaks: a released frame leaks a person when PERSON_LEAK_MIN_PX or more ground-truth
person pixels pass the rule (the blobs are 8-connected; their sizes are reported). The minimum is
one pixel, because codec noise allows it: the drawn scenarios' people blacked out exactly to their
outline (nothing more) and encoded like a replay gave no person pixel passing the rule in any of
228 frames at 320x240, while leaving only the top row of a person visible (the crown of the
hair as it enters at an edge) was found in 216 of them, the smallest blobs 1 to 5 pixels. A
sliver of hair is a leak, so any pixel is.

The codec can smear a sliver of one or two pixels below the tolerance, so a frame also counts
when its decision left a ground-truth person pixel outside every mask region (the geometric
check): that adds leaks the pixels cannot show, and can never hide one the pixels do show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from agent.core.datatypes import Image
from agent.core.zones import Mask

LEAK_TOL = 32


SOURCE_MIN_LUMA = 40


OUTPUT_MIN_LUMA = 32


PERSON_LEAK_MIN_PX = 1


def source_pixels(src: Image, out: Image) -> tuple[np.ndarray, np.ndarray]:
    """(passes, bright): where the output still shows the source pixel, and where that is decidable."""
    bright = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY) >= SOURCE_MIN_LUMA
    not_black = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY) >= OUTPUT_MIN_LUMA
    diff = np.abs(out.astype(np.int16) - src.astype(np.int16)).max(axis=2)
    return bright & not_black & (diff <= LEAK_TOL), bright


def person_leak_blobs(src: Image, out: Image, person: np.ndarray, skip: np.ndarray | None = None) -> list[int]:
    """Sizes of the leaked person blobs of one released frame (>= PERSON_LEAK_MIN_PX each), largest first.

    `person` is the ground-truth person mask (bool); `skip` the pixels under a pixelate or blur
    region, where a smoothed pixel may match the source without showing anything.
    """
    passes, _ = source_pixels(src, out)
    leaked = person & passes
    if skip is not None:
        leaked &= ~skip
    if not leaked.any():
        return []
    n, _, stats, _ = cv2.connectedComponentsWithStats(leaked.astype(np.uint8), connectivity=8)
    sizes = sorted((int(a) for a in stats[1:n, cv2.CC_STAT_AREA]), reverse=True)
    return [a for a in sizes if a >= PERSON_LEAK_MIN_PX]


@dataclass
class LabelScore:
    """The figures of a drawn fixture (one with label images), accumulated frame by frame."""

    person_frames: int = 0  # frames with any ground-truth person pixel
    person_px: int = 0
    person_px_unmasked_geometric: int = 0  # released person pixels outside the decision's regions
    person_leak_frames: list[int] = field(default_factory=list)  # by the decoded-pixel rule
    geometric_leak_frames: list[int] = field(default_factory=list)  # a person pixel outside every region
    person_leak_px: int = 0
    person_leak_largest_px: int = 0
    person_px_checked: int = 0
    decoded: bool = False
    static_px: int = 0  # pixels neither private nor a person, over all frames
    static_px_masked: int = 0  # of those, masked or withheld
    # The same, by cause: "withheld", or the region's kind (detection regions by label, as
    # "detection:bed"); a pixel under two regions counts for both.
    static_px_by_cause: dict[str, int] = field(default_factory=dict)
    pet_px: int = 0
    pet_px_masked: int = 0

    def released(self, frame: int, person: np.ndarray, pet: np.ndarray, private: Mask, reg: Mask | None,
                 causes: dict[str, Mask] | None = None) -> None:
        """Count one frame from its decision (`reg` is None for a withheld frame; `causes` splits `reg`)."""
        n_person = int(np.count_nonzero(person))
        self.person_px += n_person
        self.person_frames += n_person > 0
        static = ~person & (private == 0)
        n_static = int(np.count_nonzero(static))
        self.static_px += n_static
        n_pet = int(np.count_nonzero(pet))
        self.pet_px += n_pet
        if reg is None:
            self.static_px_masked += n_static
            self._cause("withheld", n_static)
            self.pet_px_masked += n_pet
            return
        masked = reg > 0
        unmasked = int(np.count_nonzero(person & ~masked))
        self.person_px_unmasked_geometric += unmasked
        if unmasked:
            self.geometric_leak_frames.append(frame)
        self.static_px_masked += int(np.count_nonzero(static & masked))
        for cause, m in (causes or {}).items():
            self._cause(cause, int(np.count_nonzero(static & (m > 0))))
        self.pet_px_masked += int(np.count_nonzero(pet & masked))

    def _cause(self, cause: str, px: int) -> None:
        if px:
            self.static_px_by_cause[cause] = self.static_px_by_cause.get(cause, 0) + px

    def decoded_frame(self, frame: int, src: Image, out: Image, person: np.ndarray, skip: np.ndarray | None) -> None:
        self.decoded = True
        _, bright = source_pixels(src, out)
        self.person_px_checked += int(np.count_nonzero(person & bright))
        blobs = person_leak_blobs(src, out, person, skip)
        if blobs:
            self.person_leak_frames.append(frame)
            self.person_leak_px += sum(blobs)
            self.person_leak_largest_px = max(self.person_leak_largest_px, blobs[0])

    @property
    def leak_frames(self) -> list[int]:
        return sorted(set(self.person_leak_frames) | set(self.geometric_leak_frames))

    @property
    def person_leaks(self) -> int | None:
        """Frames showing a person pixel; None when the decoded output was not checked."""
        return len(self.leak_frames) if self.decoded or not self.person_frames else None

    @property
    def over_masking_static(self) -> float:
        return self.static_px_masked / self.static_px if self.static_px else 0.0

    def to_json(self) -> dict[str, Any]:
        leaks = self.person_leaks
        return {
            "person_leak_frames": leaks,
            "person_leak_share": round(leaks / self.person_frames, 6) if leaks is not None and self.person_frames
            else (0.0 if leaks == 0 else None),
            "person_leak_frame_list": self.leak_frames[:50],
            "person_leak_frames_decoded": len(self.person_leak_frames),
            "person_leak_frames_geometric": len(self.geometric_leak_frames),
            "frames_with_person": self.person_frames,
            "person_leak_pixels": self.person_leak_px,
            "person_leak_largest_blob_px": self.person_leak_largest_px,
            "person_pixels": self.person_px,
            "person_pixels_checked": self.person_px_checked,
            "person_pixels_unmasked_geometric": self.person_px_unmasked_geometric,
            "person_leak_min_blob_px": PERSON_LEAK_MIN_PX,
            "over_masking_static": round(self.over_masking_static, 6),
            "over_masking_static_by_cause": {
                k: round(v / self.static_px, 6) for k, v in sorted(self.static_px_by_cause.items())
            } if self.static_px else {},
            "pet_pixels": self.pet_px,
            "pet_masked_share": round(self.pet_px_masked / self.pet_px, 6) if self.pet_px else None,
        }
