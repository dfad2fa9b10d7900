"""alignscope.analyses"""
