import pytest


def pytest_collection_modifyitems(items):
    # Every test in this folder is a baseline test (see __init__.py).
    for item in items:
        if "/tests/baseline/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.baseline)
