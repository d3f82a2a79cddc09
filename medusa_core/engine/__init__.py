"""The decoding engine: tree buffers, drafters, verification, acceptance, the loop and its records."""
