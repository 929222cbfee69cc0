// Atelier in the WebUI page (A1111 and Forge load every extension's javascript/*.js).
//
// "Send to txt2img": the FileBrowser tab (an iframe on this same origin, under
// ./atelier/) posts {source: "atelier", type: "send-to-txt2img", parameters: "<infotext>"}
// to its parent. The infotext goes where the WebUI's own paste button (↙️) reads it, the
// txt2img prompt, and that button parses it into every field: the same path as pasting
// parameters by hand, and as PNG Info's "Send to txt2img" (parse_generation_parameters).

(function() {
    "use strict";

    function app() {
        return typeof gradioApp === "function" ? gradioApp() : document;
    }

    function fromOurFrame(event) {
        if (event.origin !== window.location.origin) {
            return false;
        }
        var frames = app().querySelectorAll("iframe[data-atelier]");
        for (var i = 0; i < frames.length; i++) {
            if (frames[i].contentWindow === event.source) {
                return true;
            }
        }
        return false;
    }

    function sendToTxt2img(parameters) {
        var root = app();
        var prompt = root.querySelector("#txt2img_prompt textarea");
        var paste = root.querySelector("#txt2img_tools #paste") ||
            root.querySelector("#txt2img_tools button[id='paste']");
        if (!prompt || !paste) {
            console.warn("Atelier: the txt2img prompt or paste button was not found");
            return false;
        }
        prompt.value = parameters;
        if (typeof updateInput === "function") {
            updateInput(prompt);
        } else {
            prompt.dispatchEvent(new Event("input", {bubbles: true}));
        }
        if (typeof switch_to_txt2img === "function") {
            switch_to_txt2img();
        }
        paste.click();
        return true;
    }

    window.addEventListener("message", function(event) {
        var data = event.data;
        if (!data || data.source !== "atelier" || data.type !== "send-to-txt2img") {
            return;
        }
        if (!fromOurFrame(event)) {
            console.warn("Atelier: ignored a message from " + event.origin);
            return;
        }
        if (typeof data.parameters !== "string" || !data.parameters.trim()) {
            return;
        }
        sendToTxt2img(data.parameters);
    });

    // The one-time admin password notice in the FileBrowser tab.
    window.atelierDismissNotice = function(button) {
        var box = button.closest(".atelier-notice");
        fetch("./atelier/_webui/notice/dismiss", {method: "POST", credentials: "same-origin"})
            .then(function(response) {
                if (response.ok && box) {
                    box.remove();
                }
            });
    };

    window.atelierSendToTxt2img = sendToTxt2img;
})();
