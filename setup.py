from pathlib import Path

from setuptools import find_packages, setup

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
    ],
    extras_require={
        'bench': ['matplotlib'],
        'onnx': ['onnx', 'onnxruntime', 'onnxscript'],
        'spandrel': ['spandrel>=0.4'],
        'test': ['pytest'],
    },
    entry_points={
        'console_scripts': [
            'asid-prepare = asid_arch.data.prepare:main',
            'asid-train = asid_arch.train:main',
            'asid-test = asid_arch.test:main',
            'asid-sr = asid_arch.inference:main',
            'asid-export = asid_arch.export:main',
            'asid-bench = asid_arch.bench.main:main',
            'asid-kit = asid_arch.kit:main',
        ],
    },
)
