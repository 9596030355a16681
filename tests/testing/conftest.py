"""The testing kit's own tests run throwaway pytest projects with pytester."""

pytest_plugins = ["pytester"]
