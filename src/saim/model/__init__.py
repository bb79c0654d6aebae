"""The interactive predictor: input encoding, network, training, weights IO."""
