"""pyg_infdiff.data"""
