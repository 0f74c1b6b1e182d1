"""fairseq-maligan: MaliGAN and SeqGAN training for stock fairseq generators."""

from setuptools import find_packages, setup

setup(
    name="fairseq-maligan",
    version="0.1.0",
    description="Adversarial (MaliGAN, SeqGAN) training of fairseq sequence generators",
    packages=find_packages(include=["fairseq_maligan", "fairseq_maligan.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "numpy<2",
        "hydra-core==1.3.2",
        "omegaconf==2.3.0",
        "sacrebleu>=2.0",
        "nltk>=3.8",
        "sentencepiece",
        "matplotlib",
    ],
)
