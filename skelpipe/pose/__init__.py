"""RGB video to 2D poses: video reading, the OpenPifPaf network, decoding, tracking, extraction, simulated pose estimators."""
