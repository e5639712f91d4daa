"""portfolio_state.persistence."""
