"""The `clearlstm` command: argument parsing (`main`, which imports neither torch nor numba
until a command runs), the commands and their terminal output. Holds no math; may import
every other package.
"""
