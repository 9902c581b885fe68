// Applies the remembered theme before the page paints (a classic script in <head>),
// so that a dark-theme choice does not flash light first. app.js keeps it in sync.
try {
  const theme = JSON.parse(localStorage.getItem("voice-gateway.settings") || "{}").theme;
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
} catch {
  // No storage (private mode) or a damaged value: follow the system theme.
}
