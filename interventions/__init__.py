"""alignscope.interventions"""
