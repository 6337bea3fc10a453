"""The tri-segment approximation: configs, the lookup-table map, calibration, the student."""
