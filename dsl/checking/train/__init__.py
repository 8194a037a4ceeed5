"""The train section, checked: its constants (config), its data against the model, its objective."""
