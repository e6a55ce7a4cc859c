"""pyg_infdiff.noise"""
