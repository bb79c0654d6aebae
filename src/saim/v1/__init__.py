"""Generated from proto/saim/v1 by tools/gen_protos.py. Do not edit."""
