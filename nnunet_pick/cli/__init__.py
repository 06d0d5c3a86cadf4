"""Command-line entry points ``nnUNetv2_pick_<verb>``: each parses arguments (argparse) and calls a typed API."""
