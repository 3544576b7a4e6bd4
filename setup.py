"""ament_python package setup; also a plain pip-installable package (``pip install -e .``)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mbrl_control"


def data(folder: str, pattern: str) -> tuple[str, list[str]]:
    return (f"share/{PACKAGE}/{folder}", sorted(glob(f"{folder}/{pattern}")))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["msg_defs/*/msg/*.msg"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        data("launch", "*.launch.py"),
        data("launch", "*.yaml"),
        data("config", "*.yaml"),
        data("config/telemetry", "*.yaml"),
        data("models", "*.yaml"),
        data("models", "*.pt"),
        data("sim", "*.csv"),
        data("sim", "*.xml"),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "scipy", "pyyaml", "matplotlib", "rosbags>=0.10"],
    extras_require={
        "fast": ["numba>=0.60"],
        "learn": ["torch==2.13.0"],
        "nmpc": ["casadi>=3.6"],
        "mujoco": ["mujoco>=3.0"],
    },
    zip_safe=True,
    maintainer="mbrl_control developers",
    maintainer_email="mbrl-control@example.org",
    description="Real-time model-based control (MPPI, iLQR/DDP, online sysid) for cars and mobile robots on ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "mbrl-control = mbrl_control.apps.cli:main",
            "controller_node = mbrl_control.ros.controller_node:main",
            "sysid_node = mbrl_control.ros.sysid_node:main",
            "sim_node = mbrl_control.ros.sim_node:main",
        ],
    },
)
