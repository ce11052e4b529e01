// Swagger UI start-up for /docs. In a file, not inline, so the page runs under a CSP without 'unsafe-inline'.
// URLs are relative to /docs, so the page also works behind a proxy that serves the service under a path prefix.
"use strict";
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,  // the default would load a badge from validator.swagger.io, an outside host
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
