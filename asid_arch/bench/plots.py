"""The zoo's and the paper comparison's plots (matplotlib, the ``bench`` extra)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from .figures import PLOT_SET, ZOO_MODELS

COLORS = dict(zip(ZOO_MODELS, ('tab:red', 'tab:purple', 'tab:blue', 'tab:green')))
PANEL_INCHES = (5, 4)
DPI = 120


def _pyplot():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def psnr_vs_params(path: Path, measured: List[dict], scales: Sequence[int]) -> None:
    """PSNR on the plot set against parameters, one panel per scale: the published figures (hollow
    circles, from :mod:`asid_arch.bench.published`, placed at the parameters of the released configuration counted here)
    and the measured ones (filled stars; dicts with model, scale, params, psnr, label)."""
    from .networks import param_count
    from .published import published_on

    plt = _pyplot()
    scales = sorted(set(scales) | {m['scale'] for m in measured}) or [2]
    fig, axes = plt.subplots(1, len(scales), figsize=(PANEL_INCHES[0] * len(scales), PANEL_INCHES[1]), squeeze=False)
    for ax, scale in zip(axes[0], scales):
        for ref in published_on(PLOT_SET, scale):
            params = param_count(ref.model, ref.scale) / 1e3
            ax.scatter(params, ref.psnr, marker='o', facecolors='none', edgecolors=COLORS.get(ref.model, 'k'), s=70)
            ax.annotate(f'{ref.model} (published, {ref.training_set})', (params, ref.psnr), fontsize=8, xytext=(4, 4),
                        textcoords='offset points')
        for m in measured:
            if m['scale'] == scale:
                ax.scatter(m['params'] / 1e3, m['psnr'], marker='*', color=COLORS.get(m['model'], 'k'), s=120)
                ax.annotate(m['label'], (m['params'] / 1e3, m['psnr']), fontsize=8, xytext=(4, -10),
                            textcoords='offset points')
        ax.set(title=f'{PLOT_SET} x{scale}', xlabel='parameters (K)', ylabel='PSNR (dB, Y)')
        ax.margins(x=0.3, y=0.15)
        ax.grid(alpha=0.3)
    fig.suptitle('PSNR vs parameters: hollow circles = published figures, stars = measured here')
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Save a figure as PNG atomically (:func:`~asid_arch.bench.common.write_output`) and close it."""
    import io

    import matplotlib.pyplot as plt

    from .common import write_output

    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=DPI)
    plt.close(fig)
    write_output(path, buffer.getvalue())


def latency_vs_resolution(path: Path, timing: List[dict], machine: str) -> None:
    """Latency against output megapixels, one panel per scale, device and precision."""
    plt = _pyplot()
    series = sorted({(r['scale'], r['device'], r['precision']) for r in timing})
    panels = max(1, len(series))
    fig, axes = plt.subplots(1, panels, figsize=(PANEL_INCHES[0] * panels, PANEL_INCHES[1]), squeeze=False)
    for ax, (scale, device, precision) in zip(axes[0], series):
        for model in ZOO_MODELS:
            pts = sorted((r['output_mpix'], r['latency_s']) for r in timing
                         if (r['model'], r['scale'], r['device'], r['precision']) == (model, scale, device, precision))
            if pts:
                ax.plot(*zip(*pts), marker='o', label=model, color=COLORS[model])
        ax.set(title=f'x{scale}, {device} {precision}', xlabel='output megapixels', ylabel='latency (s)')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f'Latency vs output resolution ({machine})', fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
