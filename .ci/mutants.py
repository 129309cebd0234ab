"""Deliberate bugs, one at a time, in a scratch copy of the project: each must make the tests fail.

    python .ci/mutants.py                 # every mutant, without the reference data (../shared hidden)
    python .ci/mutants.py --only sam-ln-eps esa-key-swap
    python .ci/mutants.py --with-shared   # with the reference data as well

A mutant is a list of (old text, new text) replacements in one file of the package; the old text must
occur exactly once. Each mutant runs the test files that should catch it (``tests``) in a copy of the
working tree, with ``ASID_SHARED`` pointing at a folder that does not exist unless ``--with-shared``:
the reference checks skip, so what catches a mutant there is the rest of the suite. A mutant that
survives is printed as such and the script exits 1. Not run by CI (it runs the suite many times over);
run it after changing tests or the code they guard.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCH, LAYOUTS = 'asid_arch/archs/asid_arch.py', 'asid_arch/archs/asid_layouts.py'
TILING, FILES = 'asid_arch/utils/asid_tiling.py', 'asid_arch/utils/asid_files.py'
WEIGHTS = 'asid_arch/utils/asid_weights_loading.py'
MODEL = 'asid_arch/models/asid_model.py'

MUTANTS = [
    # (name, file, [(old, new), ...], test files that must fail)
    ('sam-ln-eps', ARCH, [('SAM_LN_EPS = 1e-5', 'SAM_LN_EPS = 1e-6')], ['tests/test_archs/test_modules.py']),
    ('ln2d-eps', ARCH, [('LN2D_EPS = 1e-6', 'LN2D_EPS = 1e-5')], ['tests/test_archs/test_modules.py']),
    ('esa-pool-stride', ARCH, [('ESA_POOL_KERNEL, ESA_POOL_STRIDE = 7, 3', 'ESA_POOL_KERNEL, ESA_POOL_STRIDE = 7, 2')],
     ['tests/test_archs/test_modules.py']),
    ('no-position-bias', ARCH, [('logits = torch.baddbmm(bias.expand(n, -1, -1, -1).reshape(-1, t, t), q, k)',
                                 'logits = torch.bmm(q, k)')], ['tests/test_archs/test_modules.py']),
    ('gdfn-gate-swapped', ARCH, [('gate = self._half(x, slice(0, self.hidden), gelu=True)',
                                  'gate = self._half(x, slice(self.hidden, 2 * self.hidden), gelu=True)'),
                                 ('self._half(x, slice(self.hidden, 2 * self.hidden), multiply=gate)',
                                  'self._half(x, slice(0, self.hidden), multiply=gate)')], ['tests/test_archs/test_modules.py']),
    ('grid-partition', ARCH, [('x = x.view(b, g, hh // g, g, ww // g, c).permute(0, 2, 4, 1, 3, 5)',
                               'x = x.view(b, g, hh // g, g, ww // g, c).permute(0, 1, 3, 2, 4, 5)')],
     ['tests/test_archs/test_modules.py']),
    ('idb-concat-order', ARCH, [('r1, y = self.fuse1(torch.cat((z, loc), dim=1))',
                                 'r1, y = self.fuse1(torch.cat((loc, z), dim=1))')], ['tests/test_archs/test_modules.py']),
    ('sdpa-scale', ARCH, [('.sum(-2).rsqrt()', '.sum(-2).reciprocal()')], ['tests/test_archs/test_modules.py']),
    ('esa-key-swap', LAYOUTS, [("('esa.conv2.', 'esa.down.')", "('esa.conv3.', 'esa.down.')"),
                               ("('esa.conv3.', 'esa.refine.')", "('esa.conv2.', 'esa.refine.')")],
     ['tests/test_archs/test_key_layouts.py']),
    ('meso-global-key-swap', LAYOUTS, [("(('SLA', 'sam_meso'), ('SGA', 'sam_global'))",
                                       "(('SGA', 'sam_meso'), ('SLA', 'sam_global'))")], ['tests/test_archs/test_key_layouts.py']),
    ('neosr-detection', LAYOUTS, [('sdpa = temperatures_untouched(state_dict) and not has_bias',
                                  'sdpa = temperatures_untouched(state_dict)')], ['tests/test_archs/test_neosr.py']),
    ('protocol-overlap', TILING, [('PROTOCOL_OVERLAP = 24', 'PROTOCOL_OVERLAP = 16')], ['tests/test_utils/test_tiling.py']),
    ('tiles-overwritten', TILING, [('out[region] += sr', 'out[region] = sr')], ['tests/test_utils/test_tiling.py']),
    ('tile-stride', TILING, [('stride = tile - overlap if tile > overlap else tile', 'stride = tile')],
     ['tests/test_utils/test_tiling.py']),
    ('write-in-place', FILES, [("with os.fdopen(fd, 'wb') as f:\n            write(f)\n            f.flush()\n"
                                "            os.fsync(f.fileno())",
                                "os.close(fd)\n        with open(path, 'wb') as f:\n            write(f)"),
                               ('            os.replace(tmp, path)\n        else:',
                                '            os.unlink(tmp)\n        else:')], ['tests/test_models/test_faults.py']),
    ('no-fsync', FILES, [('            os.fsync(f.fileno())\n', '')], ['tests/test_models/test_faults.py']),
    ('loss-isnan', MODEL, [('not torch.isfinite(value).all()', 'torch.isnan(value).any()')], ['tests/test_models/test_faults.py']),
    ('nan-weights-accepted', WEIGHTS, [('bad = [k for k, v in state.items() if v.is_floating_point() and not '
                                        'torch.isfinite(v).all()]', 'bad = []')], ['tests/test_cli/test_reliability.py']),
    ('exif-6-wrong-way', 'asid_arch/image_reader.py', [('if orientation == 6:\n        return np.rot90(img, -1)',
                                                  'if orientation == 6:\n        return np.rot90(img, 1)')],
     ['tests/test_cli/test_reliability.py']),
    ('sixteen-bit-by-256', 'asid_arch/image_reader.py', [('UINT16_PER_UINT8 = 257', 'UINT16_PER_UINT8 = 256')],
     ['tests/test_cli/test_reliability.py', 'tests/test_cli/test_image_depth.py', 'tests/test_cli/test_hostile_images.py']),
    ('ramp-blend', TILING, [('w[:before] = (np.arange(before, dtype=np.float32) + 0.5) / before',
                             'w[:before] = (np.arange(before, dtype=np.float32) + 1) / before')],
     ['tests/test_utils/test_tiling.py']),
    ('outputs-overwritten', 'asid_arch/cli/sr.py', [('    if not overwrite:\n        raise OutputExists(target)\n',
                                                        '')], ['tests/test_cli/test_hostile_images.py']),
    ('warmup-unchecked', 'asid_arch/pipeline/options_values.py', [("if total_ok and warmup >= train['total_iter']:",
                                                         "if total_ok and warmup > 10 * train['total_iter']:")],
     ['tests/test_pipeline/test_hostile_options.py']),
    ('name-dotdot', 'asid_arch/pipeline/options_values.py', [("name.strip() in ('', '.', '..')", "name.strip() in ('', '.')")],
     ['tests/test_pipeline/test_hostile_options.py']),
    ('prepare-recipe-ignored', 'asid_arch/data/record.py', [('if entry.recipe != recipe:', 'if False:')],
     ['tests/test_data/test_hostile_prepare.py']),
    ('kit-overwrites-edits', 'asid_arch/cli/kit.py', [('kept = [row for row in rows if row.state == EDITED and not force]',
                                                   'kept = []')], ['tests/test_data/test_hostile_prepare.py']),
]


def scratch_copy() -> Path:
    """The working tree (tracked and untracked files, without the environment and caches) in a new folder."""
    folder = Path(tempfile.mkdtemp(prefix='asid-mutant-'))
    ignore = shutil.ignore_patterns('.venv', '.git', '__pycache__', '*.egg-info', 'experiments', 'results',
                                    'datasets', 'bench_out')
    shutil.copytree(REPO, folder / 'repo', ignore=ignore)
    return folder / 'repo'


def apply(copy: Path, path: str, replacements) -> None:
    target = copy / path
    text = target.read_text()
    for old, new in replacements:
        if text.count(old) != 1:
            raise SystemExit(f'mutant text not found exactly once in {path}: {old!r} (update .ci/mutants.py)')
        text = text.replace(old, new)
    target.write_text(text)


def run_tests(copy: Path, tests, shared: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(copy), ASID_SHARED=shared, ASID_REQUIRE_SHARED='0', PYTHONUNBUFFERED='1')
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests]
    return subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)


def first_failure(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(('FAILED', 'ERROR'))), output[-300:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--only', nargs='+', metavar='NAME', help='these mutants only')
    parser.add_argument('--with-shared', action='store_true', help='with the reference data (../shared) too')
    parser.add_argument('--list', action='store_true', help='list the mutants and exit')
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m[0] in args.only]
    if args.list or not chosen:
        for name, path, _, tests in MUTANTS:
            print(f'{name:24s} {path}  ->  {" ".join(tests)}')
        return 0 if chosen else 2
    shared = os.environ.get('ASID_SHARED', str(REPO.parent / 'shared')) if args.with_shared else '/nonexistent'
    survived = []
    for name, path, replacements, tests in chosen:
        copy = scratch_copy()
        try:
            apply(copy, path, replacements)
            result = run_tests(copy, tests, shared)
        finally:
            shutil.rmtree(copy.parent, ignore_errors=True)
        if result.returncode == 0:
            survived.append(name)
            print(f'SURVIVED {name}: {" ".join(tests)} passed', flush=True)
        else:
            print(f'caught   {name}: {first_failure(result.stdout)}', flush=True)
    print(f'{len(chosen) - len(survived)} of {len(chosen)} mutants caught')
    return 1 if survived else 0


if __name__ == '__main__':
    sys.exit(main())
