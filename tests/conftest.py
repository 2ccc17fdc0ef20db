import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/ from the current output instead of comparing")


import os  # noqa: E402

import pytest  # noqa: E402


def need(available: bool, what: str, how: str) -> None:
    """Skip a test whose server software is missing, loudly, but only outside CI: in CI
    (``CI`` set, as .ci/run does) a missing server is a failure, never a skip."""
    if available:
        return
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: CI must run every test")
    import warnings
    warnings.warn(f"SKIPPING: {message}")
    pytest.skip(f"SKIPPED, NOT TESTED: {message}")


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory):
    """One seeded Samba AD DC for the whole session (provisioning and seeding take ~30 s)."""
    import ad_seed
    from samba_dc import SambaDC, samba_installed
    need(samba_installed(), "Samba AD DC", "make test installs it as root: scripts/install-test-deps.sh")
    with SambaDC(tmp_path_factory.mktemp("samba") / "dc", seed=[ad_seed.seed_ldif()]) as dc:
        yield dc
