// Starts Swagger UI on this server's OpenAPI document (keyplane/openapi/pages.py). A file of its own, not
// an inline script, so the page's Content-Security-Policy can allow scripts from this server only.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // every private route is signed over its exact bytes: "Try it out" cannot sign, so it is off
  supportedSubmitMethods: [],
  validatorUrl: null,
});
