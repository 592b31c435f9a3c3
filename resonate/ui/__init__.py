"""The Streamlit app's building blocks. With app.py and pages/, the only code that imports Streamlit."""
