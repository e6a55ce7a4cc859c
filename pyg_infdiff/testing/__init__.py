"""pyg_infdiff.testing"""
