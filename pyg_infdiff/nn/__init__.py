"""pyg_infdiff.nn"""
