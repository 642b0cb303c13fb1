"""setuptools entry point; the pybind11 CPU kernel extension (kernels/) will be declared here.

All metadata lives in pyproject.toml.
"""
from setuptools import setup

setup()
