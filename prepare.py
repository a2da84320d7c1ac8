"""`python prepare.py ...` is `autoresearch prepare ...` (upstream's habit). See common/prepare.py."""

from common.cli import main

if __name__ == "__main__":
    main(["prepare", *__import__("sys").argv[1:]])
