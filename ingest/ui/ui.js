"use strict";
// The only script on the page: the delete buttons. Each button carries the
// push-API path of its group, built and escaped on the server.
document.addEventListener("click", function (ev) {
  var b = ev.target.closest("button.delete");
  if (!b) {
    return;
  }
  if (!window.confirm("Delete every series of group " + b.dataset.key + "?")) {
    return;
  }
  b.disabled = true;
  fetch(b.dataset.path, { method: "DELETE" }).then(function (r) {
    if (r.status !== 202) {
      return r.text().then(function (t) {
        throw new Error(r.status + " " + t);
      });
    }
    var g = document.getElementById(b.dataset.group);
    if (g) {
      g.remove();
    }
    var n = document.getElementById("group-count");
    n.textContent = String(document.querySelectorAll(".group").length);
  }).catch(function (e) {
    b.disabled = false;
    window.alert("Deleting the group failed: " + e.message);
  });
});
