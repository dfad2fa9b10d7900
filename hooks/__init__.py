"""alignscope.hooks"""
