"""The published figures the measured ones are set beside, each with its source.

Only figures traced to a public source are listed; a model, scale and data set without a row has no
published figure here, and is shown as such (never estimated). Y-channel PSNR in dB, bicubic
degradation (MATLAB ``imresize``), border = scale. No SSIM could be traced, so none is listed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass(frozen=True)
class Citation:
    """Where a published figure comes from: what it is, and where a reader can check it."""
    what: str
    url: str
    note: str = ''

    def __str__(self) -> str:
        return f'{self.what} ({self.url}{"; " + self.note if self.note else ""})'


@dataclass(frozen=True)
class PublishedFigure:
    """One published result: a model at one scale on one benchmark set."""
    model: str
    scale: int
    dataset: str
    psnr: Optional[float]  # dB, Y channel
    ssim: Optional[float]
    source: Citation
    training_set: str = 'DIV2K'


ASID_PAPER = Citation(
    'Park, Soh, Cho: Efficient Attention-Sharing Information Distillation Transformer for Lightweight Single Image '
    'Super-Resolution, AAAI 2025 (arXiv:2501.15774), Table 1; figures as listed by the benchmark index',
    'https://www.wizwand.com/paper/68fa76d51e209131cea6f69b',
    'the index lists the figures in two groups without naming the variant; the group with the higher Urban100 '
    'figures (and the Manga109 x4 one) is taken as ASID-D8\'s, the larger model, the other as ASID\'s')
OMNISR_ABSTRACT = Citation(
    'Wang et al.: Omni Aggregation Networks for Lightweight Image Super-Resolution, CVPR 2023, abstract '
    '("26.95 dB@Urban100 x4 with only 792K parameters")',
    'https://arxiv.org/abs/2304.10244',
    'trained on DF2K (DIV2K + Flickr2K), not on DIV2K alone')

PUBLISHED: Tuple[PublishedFigure, ...] = (
    PublishedFigure('ASID', 2, 'Urban100', 33.35, None, ASID_PAPER),
    PublishedFigure('ASID', 3, 'Urban100', 29.08, None, ASID_PAPER),
    PublishedFigure('ASID', 4, 'Urban100', 26.89, None, ASID_PAPER),
    PublishedFigure('ASID-D8', 2, 'Urban100', 33.46, None, ASID_PAPER),
    PublishedFigure('ASID-D8', 3, 'Urban100', 29.28, None, ASID_PAPER),
    PublishedFigure('ASID-D8', 4, 'Urban100', 27.07, None, ASID_PAPER),
    PublishedFigure('ASID-D8', 4, 'Manga109', 31.54, None, ASID_PAPER),
    PublishedFigure('Omni-SR', 4, 'Urban100', 26.95, None, OMNISR_ABSTRACT, training_set='DF2K'),
)


def published(model: str, scale: int, dataset: str) -> Optional[PublishedFigure]:
    """The published figure of ``model`` at ``scale`` on ``dataset``, or None when none is listed."""
    return next((p for p in PUBLISHED if (p.model, p.scale, p.dataset) == (model, scale, dataset)), None)


def published_on(dataset: str, scale: int) -> List[PublishedFigure]:
    """Every published figure on ``dataset`` at ``scale`` (for the plots)."""
    return [p for p in PUBLISHED if (p.dataset, p.scale) == (dataset, scale)]
