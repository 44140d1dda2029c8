// What every page shares. Scripts live in files, never inline: the
// Content-Security-Policy allows scripts from the hub only.

// A <select data-autosubmit> submits its form when changed (the studies list's sort).
document.addEventListener("change", (event) => {
  if (event.target.matches("select[data-autosubmit]")) event.target.form.submit();
});
