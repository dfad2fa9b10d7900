"""alignscope.organisms"""
