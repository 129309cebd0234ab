"""The README's main job: a short, real ASID x2 training + validation on CPU.

1. ``asid-prepare demo``: scikit-image's bundled sample images -> HR/LR, sub-images, LMDB.
2. BasicSR's training pipeline with ``options/train/ASID/demo_ASID_SRx2_cpu.yml``
   (``--auto_resume``: an interrupted demo continues from its last checkpoint).
3. The trained model against bicubic up-sampling on the validation images (Y-channel PSNR).

Run it from any folder (data, experiments and results go under the current one): ``python -m asid_arch.cli.demo``
(``make demo`` sets up the venv first).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

DEMO_OPTIONS = 'train/ASID/demo_ASID_SRx2_cpu.yml'  # shipped with the package


def evaluate(net_path: Path, opt: dict) -> list:
    """Rows (image, bicubic PSNR, ASID PSNR) on the validation pairs of ``opt``, whole-image inference."""
    import torch

    from asid_arch.data.prepare import bicubic_resize
    from asid_arch.evaluation import paired_images, super_resolve
    from basicsr.archs import build_network
    from basicsr.metrics import calculate_psnr

    scale = opt['scale']
    net = build_network(dict(opt['network_g']))
    net.load_state_dict(torch.load(net_path, map_location='cpu', weights_only=True)['params'])
    net.eval()
    val = opt['datasets']['val']
    rows = []
    for name, gt, lr in paired_images(val['dataroot_gt'], val['dataroot_lq']):
        psnr = [calculate_psnr(img, gt, scale, input_order='HWC', test_y_channel=True)
                for img in (bicubic_resize(lr, scale), super_resolve(net, lr))]
        rows.append((name, *psnr))
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m asid_arch.cli.demo',
                                     description=__doc__.split('\n\n')[0].replace('``', "'"))
    parser.add_argument('-opt', type=Path, default=None, help=f'demo option file (default: the shipped {DEMO_OPTIONS})')
    args = parser.parse_args(argv)

    from asid_arch.tuning import tune_cpu

    tune_cpu()  # before torch is imported
    from asid_arch.pipeline.option_file import OptionFileError, read_option_file, shipped_option_file
    from asid_arch.pipeline.options_structure import check_structure

    try:
        args.opt = args.opt or shipped_option_file(DEMO_OPTIONS)
        opt = read_option_file(args.opt)  # data only: the demo reads it before the training's own checks
    except OptionFileError as err:
        print(f'[demo] {err}', file=sys.stderr)
        return 2
    problems = check_structure(opt, is_train=True)
    if problems:
        print(f'[demo] invalid options in {args.opt}:\n' + '\n'.join(f'  - {p}' for p in problems), file=sys.stderr)
        return 2
    data_root = Path(opt['datasets']['train']['dataroot_gt']).parent
    from asid_arch.data.prepare import prepare_demo

    print(f'[demo] 1/3 preparing the embedded data set in {data_root}', flush=True)
    report = prepare_demo(data_root, scales=(opt['scale'], ))
    if report.failed:
        print(f'[demo] could not prepare: {report.failed}', file=sys.stderr)
        return 1

    print(f"[demo] 2/3 training {opt['name']} ({opt['train']['total_iter']} iterations, CPU)", flush=True)
    from asid_arch.cli.train import main as train_main

    start = time.time()
    train_main(['-opt', str(args.opt), '--auto_resume'])
    seconds = time.time() - start

    print('[demo] 3/3 ASID vs bicubic on the validation images', flush=True)
    rows = evaluate(Path('experiments') / opt['name'] / 'models' / 'net_g_latest.pth', opt)
    print(f"\n{'image':<12} {'bicubic':>9} {'ASID':>9}   (Y-channel PSNR, dB, border {opt['scale']})")
    for name, bic, sr in rows:
        print(f'{name:<12} {bic:9.2f} {sr:9.2f}')
    mean_bic, mean_sr = statistics.mean(r[1] for r in rows), statistics.mean(r[2] for r in rows)
    print(f"{'mean':<12} {mean_bic:9.2f} {mean_sr:9.2f}   ({mean_sr - mean_bic:+.2f} dB)")
    print(f'[demo] training + validation took {seconds:.0f} s; logs and checkpoints in experiments/{opt["name"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
