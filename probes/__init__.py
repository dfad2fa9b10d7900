"""alignscope.probes"""
