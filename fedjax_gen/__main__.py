"""`python -m fedjax_gen ...`: the `fedjax-gen` command line, for an environment whose
scripts folder is not on PATH."""

from fedjax_gen.cli import console

if __name__ == "__main__":
  console(prog="python -m fedjax_gen")
