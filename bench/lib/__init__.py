"""Helpers of the sipp benchmark runner (bench/run): processes, sipp, search, report."""
