import ast
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
ENTRY_MODULE = 'asid_arch.cli.entry'  # every console script starts there (Ctrl-C answered from its first line)


def commands() -> dict:
    """The package's commands (``COMMANDS`` of asid_arch/cli/entry.py, their one list), read without importing it."""
    tree = ast.parse((HERE / 'asid_arch' / 'cli' / 'entry.py').read_text(encoding='utf-8'))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, 'id', None) for t in node.targets] == ['COMMANDS']:
            return ast.literal_eval(node.value)
    raise RuntimeError('asid_arch/cli/entry.py defines no COMMANDS')


class BuildWithOptions(build_py):
    """Ship the repository's option files inside the package (``asid_arch/options/``), so that the demo and
    every command find them in an installed package as in a checkout."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / 'options'
        for path in sorted(source.rglob('*.yml')):
            target = Path(self.build_lib) / 'asid_arch' / 'options' / path.relative_to(source)
            self.mkpath(str(target.parent))
            self.copy_file(str(path), str(target), preserve_mode=False)


setup(
    name='asid_arch',
    version='0.1.0',
    description='ASID (Attention-Sharing Information Distillation) super-resolution for BasicSR',
    long_description=Path(__file__).with_name('README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['asid_arch', 'asid_arch.*']),
    python_requires='>=3.9',
    install_requires=[
        'torch>=2.0',
        'torchvision',
        'basicsr>=1.4.2',
        'numpy',
        'opencv-python',
        'pyyaml',
        'lmdb',
        'scikit-image',
        'pillow',
        'tifffile',
        'tqdm',
        'filelock',
    ],
    extras_require={
        'bench': ['matplotlib'],
        'onnx': ['onnx', 'onnxruntime', 'onnxscript', 'onnxslim'],
        'ncnn': ['pnnx', 'ncnn'],
        'spandrel': ['spandrel>=0.4'],
        'test': ['pytest', 'pytest-xdist'],
    },
    entry_points={'console_scripts': [f"{name} = {ENTRY_MODULE}:{name.replace('-', '_')}" for name in commands()]},
    cmdclass={'build_py': BuildWithOptions},
)
