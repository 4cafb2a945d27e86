"""Luigi batch job suite for semiconductor test data (STDF V4)."""

from setuptools import find_packages, setup

setup(
    name="stdf-jobs",
    version="0.1.0",
    description="Luigi workflows that turn STDF test data into Parquet, features and a yield model",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["jobs", "jobs.*"]),
    install_requires=[
        "luigi>=3.5,<4",
        "pandas>=2.2",
        "pyarrow>=16",
        "numpy>=1.26",
        "scikit-learn>=1.5",
        "scipy>=1.13",
        "pystdf>=1.4,<2",
        "stdf-convert>=0.3,<0.4",
        "isal>=1.9,<2",
        "tqdm>=4.66",
        "tenacity>=8.2",
        "sqlalchemy>=2.0",
        "matplotlib>=3.8",
        "mlflow>=3.10,<4",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff>=0.6", "duckdb>=1.1", "aiosmtpd>=1.4"],
    },
)
