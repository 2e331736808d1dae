// keyplane console: the copy buttons beside a one-time secret. Everything else works without script.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = document.querySelector(".copied");
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    status.textContent = "Copied to the clipboard.";
  } catch {
    // no clipboard access (a plain-http origin other than localhost): the text is selected for Ctrl+C
    status.textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
  }
});
