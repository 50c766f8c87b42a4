"""Official checkpoint layouts: converters between the published key names and vdlearn's modules."""
