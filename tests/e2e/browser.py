"""Headless Debian chromium for the end-to-end tests that need a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from selenium.webdriver import Chrome, ChromeOptions, ChromeService

__all__ = ["chromium", "headless"]

# Debian's packages of the browser and its driver.
BROWSER_PACKAGES = ("chromium", "chromium-driver")


def install_browser() -> None:
    """apt-get install of BROWSER_PACKAGES, updating the package lists if it fails once."""
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *BROWSER_PACKAGES]

    def ran(command: list[str]) -> bool:
        done = subprocess.run(command, env=environment, capture_output=True, check=False)
        return done.returncode == 0

    if not ran(install) and ran(["apt-get", "update", "-qq"]):  # the lists may be stale
        ran(install)


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """The paths of chromium and its driver, installed with apt-get first where they are
    missing and this runs as root; else the tests are skipped, saying what to install."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found and os.geteuid() == 0 and shutil.which("apt-get"):
        install_browser()
        found = shutil.which("chromium"), shutil.which("chromedriver")
    browser, driver = found
    if browser is None or driver is None:
        pytest.skip(f"needs Debian's {' and '.join(BROWSER_PACKAGES)} (apt-get install)")
    return browser, driver


def headless(paths: tuple[str, str]) -> Chrome:
    """A headless chromium (the paths of `chromium`); the caller quits it."""
    binary, driver_path = paths
    options = ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1280,800"):
        options.add_argument(argument)
    return Chrome(options=options, service=ChromeService(driver_path))
