"""Service lifecycle, module manager, configuration, telemetry."""
