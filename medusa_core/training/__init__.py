"""Head training: self-distillation data, training and calibration."""
