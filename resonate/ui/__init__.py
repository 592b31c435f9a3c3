"""The Streamlit app's building blocks. With app.py and app_pages/, the only code that imports Streamlit."""
