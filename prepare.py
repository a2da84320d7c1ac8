"""`python prepare.py ...` is `autoresearch prepare ...` (upstream's habit). See common/prepare.py."""

from common.cli import prepare

if __name__ == "__main__":
    prepare(prog_name="python prepare.py")
